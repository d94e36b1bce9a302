"""Training the reference model on scripted demonstrations in the simulated world.

`demos` records a scripted expert in the MuJoCo world (images, joint state, action chunks,
MolmoThink depth-token targets), `trainer` behaviour-clones the model on them, `evaluate` runs
a policy closed loop in the same world. `vla-runtime train` drives all three.
"""
