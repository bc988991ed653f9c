"""Deployment: the ONNX export (checked against torch on every modality combination, with the model's
metadata inside) and the inference backends (torch, onnxruntime, OpenVINO, TensorRT) that run it.

Serving never imports training code, and none of this imports ROS.
"""
