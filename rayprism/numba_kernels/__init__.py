"""Hot loops compiled with numba (planned): bit packing, Hamming top-k, MaxSim, FDE, fusion.

Milvus Lite has no binary or int8 vector fields, so compressed search tiers will run
here over codes kept beside a collection.
"""
