"""The pack's own pipeline at full size on a simulated GPU (``plan --simulate``).

fakecard.py: the simulated card (FakeTensorMode on a fake ``cuda`` device, bytes alive per device
counted op by op, FLOPs counted, attention routed through the fused kernel the card would run).
fullsize.py: the set's parts built by the loader's own builders from fake tensors of the full
14B shapes (nothing read, nothing allocated; gguf_fake.py: a GGUF DiT). run.py: the plan's
placement phase by phase around the sampler's own phases, the measured peaks next to the plan's
estimates. replay.py: identical repeated calls answered from their first measurement. matrix.py:
every card x size x file kind. cards.py: time and cost per card, estimated from the FLOPs.
"""
