"""Museum data, preprocessing and tokenizer: torch-free, shared by training, calibration,
validation and the kiosk.

Import the submodules directly (`edgefuse.data.museum`, `.dataset`, `.preprocess`,
`.tokenizer`); this package file stays empty of imports so `edgefuse --help` stays fast.
"""
