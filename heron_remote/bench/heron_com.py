"""The com file of the bench's Heron node: what Heron's editor runs as the com of a source node.

Shaped like a ported Heron source node's com (``tests/heron_nodes``): the editor runs it with
its argv, it starts the com with :func:`heron_remote.heron.general_utils.start_the_source_communications_process`
and runs its loop until the editor's TERM. The worker is the bench worker, given as the
editor's worker executable.
"""

from __future__ import annotations

from heron_remote.heron import general_utils as gu

BaseName = "BenchSource"
NodeAttributeNames = ["Parameters", "Frame Out"]
NodeAttributeType = ["Static", "Output"]

if __name__ == "__main__":
    com = gu.start_the_source_communications_process(NodeAttributeType, NodeAttributeNames)
    gu.register_exit_signals(com.on_kill)
    com.start_ioloop()
