"""Model weights and runtimes: the registry and packs (download by sha256, mirror, cache), converters
to ONNX (dlib ResNet, MiniFASNet), ONNX Runtime sessions. Hands out sessions and metadata, never
vision types."""
