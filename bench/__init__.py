"""`make bench`: throughput, CPU, memory and latency of the worker against its floor and peers.

bench/run.py orchestrates; the measured programs (raw_consume, naive, quix_peer) and the scrape
benchmark run as subprocesses so that CPU time and peak RSS are theirs alone.
"""
