"""The segmentation model.

* :mod:`~scallop.models.runtime` — the shipped ONNX file and its onnxruntime runtime (all the
  line needs);
* :mod:`~scallop.models.dataset` — the one data-set reader (numpy and OpenCV only), for
  training, evaluation, labels and ``scallop detect``;
* :mod:`~scallop.models.net`, :mod:`~scallop.models.train`, :mod:`~scallop.models.augment` — the
  network and its training (the optional ``train`` extra: PyTorch);
  :mod:`~scallop.models.onnx_io` — the exported file's metadata, and weights read back from it.
"""
