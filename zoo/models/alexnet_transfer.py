"""AlexNet transfer learning (seed 002, section 3.2 迁移学习): frozen ImageNet features and a new linear head."""
from torch import nn

from zoo.models.alexnet_mnist import MNIST_96_RGB
from zoo.models.pretrained import alexnet_backbone
from zoo.registry import ModelSpec, Recipe, TutorialLoop, register_model


def build(num_classes: int = 10, **pretrained_kwargs) -> nn.Module:
    alexnet = alexnet_backbone(**pretrained_kwargs)
    for p in alexnet.features.parameters():  # "只需训练自己添加的网络层"
        p.requires_grad = False
    model = nn.Sequential(
        alexnet.features,
        nn.AdaptiveAvgPool2d((6, 6)),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(256 * 6 * 6, num_classes),
    )
    model.pretrained = alexnet.pretrained
    return model


@register_model(ModelSpec(
    name="alexnet_transfer",
    dataset="mnist",
    input_shape=(3, 96, 96),
    num_classes=10,
    # The section names no data pipeline or hyper-parameters: MNIST with the AlexNet-MNIST transforms, and the
    # SGD + momentum of the same article (0.01 / 0.9), batch 64, 5 epochs.
    recipe=Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=5, transforms=MNIST_96_RGB),
    source="seed 002: 3.2 迁移学习 / 4.4",
    description="AlexNet features (ImageNet, frozen) > AdaptiveAvgPool(6x6) > Flatten > Dropout 0.5 > Linear 9216-10",
    uses_pretrained=True,
    # The section shows only the model; the article's one training loop (4.1) prints `loss.item()` every batch.
    tutorial_loop=TutorialLoop(shuffle=True, loss_item_every=1, print_every=1),
))
def alexnet_transfer(num_classes: int = 10, **pretrained_kwargs) -> nn.Module:
    return build(num_classes, **pretrained_kwargs)
