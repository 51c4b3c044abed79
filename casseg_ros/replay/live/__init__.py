"""Live sessions: a recording played to the running node and its answers recorded.

`player` (a recording as a camera), `recorder` (the node's outputs into a bag), `session` (start
the node, play and record), `recording` (read what was recorded), `run.run_realtime` (what
`casseg-replay --realtime` runs).
"""
