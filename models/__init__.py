"""The segmentation model: the shipped ONNX file, its onnxruntime runtime (all the line
needs), and the training code and data-set reader (the optional ``train`` extra)."""
