"""The graph reachable from an output, in topological ranks.

A node's rank is its longest distance from the output. Every consumer of a node has a smaller rank, so
running the ranks in order runs each node once, after all its consumers have contributed its gradient.
Both walks are loops over explicit stacks, so a 10,000-op chain needs no recursion.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([1.0], [1]), requires_grad=True)
>>> y = (x * 2.0).exp().sum()
>>> [[n.name() for n in rank] for rank in topological_ranks(y.grad_fn)]
[['SumBackward'], ['ExpBackward'], ['MulScalarBackward'], ['AccumulateGrad']]
"""

from __future__ import annotations


def consumer_counts(root) -> dict:
    """For every node reachable from ``root``: how many edges lead into it from other reachable nodes."""
    counts = {root: 0}
    stack = [root]
    while stack:
        node = stack.pop()
        for nxt in node._next:
            if nxt is None:
                continue
            if nxt not in counts:
                counts[nxt] = 0
                stack.append(nxt)
            counts[nxt] += 1
    return counts


def topological_ranks(root) -> list:
    """The nodes reachable from ``root`` grouped by rank: ``[[root], [rank-1 nodes], ...]``."""
    waiting = consumer_counts(root)
    ranks, current = [], [root]
    while current:
        ranks.append(current)
        following = []
        for node in current:
            for nxt in node.next_functions():
                if nxt is None:
                    continue
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    following.append(nxt)
        current = following
    return ranks
