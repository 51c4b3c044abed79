"""The process toolkit: the node, a player and a recorder as child processes on loopback DDS.

`children` starts and stops them (environment, command lines, the child's side of a stop);
`readiness` says when they are ready, read from the ROS graph. Used by the demo, `casseg-replay
--realtime`, the benchmarks and the tests; the node itself never imports it.
"""
