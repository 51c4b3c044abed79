"""Export for deployment: `casseg-export` (cli), int8 quantisation, parity checks, calibration frames.

The backends that run an export live in `casseg_ros.runtime`; this room makes and checks one.
"""
