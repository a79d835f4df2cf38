"""One recipe per row of the paper's Tables I-IV; see :mod:`train.configs.paper.common`."""
