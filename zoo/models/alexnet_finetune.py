"""AlexNet fine-tuning (seed 002, section 3.4 模型微调): every pretrained parameter frozen, a new classifier trained."""
from torch import nn

from zoo.models.alexnet_mnist import MNIST_96_RGB
from zoo.models.pretrained import alexnet_backbone
from zoo.registry import ModelSpec, Recipe, TutorialLoop, register_model


def build(num_classes: int = 10, **pretrained_kwargs) -> nn.Module:
    alexnet = alexnet_backbone(**pretrained_kwargs)
    for param in alexnet.parameters():
        param.requires_grad = False
    alexnet.classifier = nn.Sequential(
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, num_classes),
    )
    return alexnet


@register_model(ModelSpec(
    name="alexnet_finetune",
    dataset="mnist",
    input_shape=(3, 96, 96),
    num_classes=10,
    # As for alexnet_transfer: the section gives no recipe; the article's SGD + momentum, batch 64, 5 epochs.
    recipe=Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=5, transforms=MNIST_96_RGB),
    source="seed 002: 3.4 模型微调 / 4.6",
    description="AlexNet (ImageNet, all frozen) with a new 9216-4096-4096-10 classifier (dropout 0.5)",
    uses_pretrained=True,
    # The section shows only the model; the article's one training loop (4.1) prints `loss.item()` every batch.
    tutorial_loop=TutorialLoop(shuffle=True, loss_item_every=1, print_every=1),
))
def alexnet_finetune(num_classes: int = 10, **pretrained_kwargs) -> nn.Module:
    return build(num_classes, **pretrained_kwargs)
