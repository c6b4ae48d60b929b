"""Key-name maps between Wan's original layout, ComfyUI single files and diffusers/transformers.

One module per component: ``dit``, ``t5``, ``clip``, ``vae``. Each maps a foreign key to ours
(diffusers / transformers naming) and back, and infers what config it can from weight shapes.
"""
