"""The torchvision engine's model: backbones, RoI pooling and heads, meta-architectures."""
