"""ns-eval for a cross-subject model: image metrics per subject, novel view vs novel pose, and mesh metrics."""
