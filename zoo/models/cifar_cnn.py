"""The 3-conv CNN on CIFAR-10 (seed 003, ``MyModule``): no activations between layers, as written there."""
from torch import nn

from zoo.registry import ModelSpec, Recipe, TutorialLoop, register_model


class MyModule(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.module1 = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 64),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.module1(x)


@register_model(ModelSpec(
    name="cifar_cnn",
    dataset="cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    # SGD(lr=1e-2), DataLoader(batch 64, shuffle=True, drop_last=True), 10 epochs, ToTensor only.
    recipe=Recipe(optimizer="sgd", lr=1e-2, batch_size=64, epochs=10, drop_last=True),
    source="seed 003: CIFAR-10 完整训练, MyModule",
    description="3x [Conv5 > MaxPool] > Flatten > FC 1024-64-10",
    # seed 003: `DataLoader(train_set, 64, shuffle=True, drop_last=True)`; every step
    # `writer.add_scalar("train loss", loss.item(), total_train_step)` (and `print("#", end="")`), and
    # `if total_train_step % 100 == 0: print(f"train step:{total_train_step}, loss:{loss.item()}")`.
    tutorial_loop=TutorialLoop(shuffle=True, drop_last=True, loss_item_every=1, print_every=100,
                               tensorboard_every=1),
))
def cifar_cnn(num_classes: int = 10) -> nn.Module:
    return MyModule(num_classes)
