"""nerfstudio-facing tools for a conditioned, cross-subject model.

* :mod:`conditioning`: which subject-frame a render is conditioned on, with errors that list the available ones;
* :mod:`evaluation`: ns-eval's metrics per subject, per image, novel view vs novel pose, plus geometry (Chamfer, P2S);
* :mod:`geometry`: density grids and marching cubes inside the proxy box;
* :mod:`cameras`: framing a person from its source cameras, orbits, the viewer's first pose;
* :mod:`render` (``gmnerf-render``): ns-render's subcommands plus an orbit, for a chosen subject/frame or a sequence;
* :mod:`viewer`: GUI controls for the nerfstudio viewer (subject, frame, source cameras, proxy overlay);
* :mod:`export_mesh` (``gmnerf-export-mesh``) and :mod:`report` (``gmnerf-report``).

See docs/tools.md.
"""
