"""OpenCL C 1.2 kernel templates (Mako), shipped as package data of axonml_autograd."""
