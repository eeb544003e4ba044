"""The nerfstudio side: methods and dataparsers registered with ns-train, the pipeline, trainer, optimizers and
schedulers, the viewer controls the pipeline holds, and the patches to nerfstudio."""
