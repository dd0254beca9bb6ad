"""``usrasr features``: a pretrained model's layer (or features from elsewhere) written once as
Lhotse features, for ``usrasr train --units encoder`` and users' own scripts to read without the model."""
