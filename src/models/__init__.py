"""The classic CNN zoo: one module per family, plain ``nn.Module``s with typed constructor arguments.

Families: ``blueprint`` (cs231n pattern), ``lenet``, ``alexnet``, ``zfnet``, ``vgg``, ``googlenet``,
``bn_inception`` (Inception v2 of the BN paper), ``inception`` (v3), ``inception_v4`` (Inception-v4 and
Inception-ResNet-v2, paper and released layouts; their modules in ``inception_v4_blocks``), ``xception``,
``resnet`` (ImageNet/CIFAR/Wide forms, plain twins, shortcut A/B/C, ResNeXt, SE, stochastic depth,
pre-activation), ``densenet``, ``squeezenet``, ``mobilenet`` (v1, v2), ``mobilenet_v3`` (large, small),
``shufflenet`` (v2, 0.5x-2x), ``efficientnet`` (B0-B7 by compound scaling). Helpers:
``fully_conv`` (FC layers to convolutions), ``profile`` (per-stage parameters and multiply-adds),
``geometry`` (feature-map sizes), ``errors`` and ``init``. Each named variant is ``conf/model/<name>.yaml``.

Every family has one interface (``interface``, timm's): ``forward_features``, ``forward_head(...,
pre_logits)``, ``num_features``, ``get_classifier``/``reset_classifier``; tools find the classifier layer
and the feature map's module with ``interface.classifier_module`` and ``interface.feature_module``.
"""
