"""AlexNet on MNIST at 96x96 (seeds 000/001, ``MyAlexNet``): torchvision AlexNet, dropout 0.3, new classifier."""
from torch import nn

from zoo.models.pretrained import alexnet_backbone
from zoo.registry import ModelSpec, Recipe, Transforms, TutorialLoop, register_model

MNIST_96_RGB = Transforms(resize=(96, 96), channels=3, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))


class MyAlexNet(nn.Module):
    def __init__(self, num_classes: int = 10, **pretrained_kwargs):
        super().__init__()
        # torchvision.models.alexnet(pretrained=True, dropout=0.3), then its classifier replaced.
        self.net = alexnet_backbone(dropout=0.3, **pretrained_kwargs)
        self.pretrained = self.net.pretrained
        self.net.classifier = nn.Sequential(
            nn.Dropout(p=0.3),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.3),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, inputs):
        return self.net(inputs)


@register_model(ModelSpec(
    name="alexnet_mnist",
    dataset="mnist",
    input_shape=(3, 96, 96),
    num_classes=10,
    # Resize((96, 96)) > Grayscale(3) > ToTensor > Normalize(0.2, 0.3); AdamW(lr=1e-4) with its default weight
    # decay 0.01; batch 512; 5 epochs.
    recipe=Recipe(optimizer="adamw", lr=1e-4, weight_decay=0.01, batch_size=512, epochs=5, transforms=MNIST_96_RGB,
                  eval_batch_size=512),
    source="seeds 000/001: AlexNet MNIST 分类, MyAlexNet",
    description="torchvision AlexNet (ImageNet features, dropout 0.3) with a new 9216-4096-4096-10 classifier",
    uses_pretrained=True,
    # seed 000 train_model(): `current_loss = loss.cpu().item()` and `current_acc = acc.cpu().item()` every batch,
    # a print `if idx % print_freq == 0` with `train_model(..., i + 1, 16)`; `DataLoader(dataset=train_set,
    # batch_size=512, shuffle=True, drop_last=False)`; `optim.AdamW(params=alexnet.parameters(), lr=0.0001)`.
    tutorial_loop=TutorialLoop(shuffle=True, loss_item_every=1, acc_item_every=1, print_every=16),
))
def alexnet_mnist(num_classes: int = 10, **pretrained_kwargs) -> nn.Module:
    return MyAlexNet(num_classes, **pretrained_kwargs)
