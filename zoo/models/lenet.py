"""The LeNet-style CNN on MNIST (seed 002, section 3.1 "数据加载": ``Net``)."""
import torch.nn.functional as F
from torch import nn

from zoo.registry import ModelSpec, Recipe, TutorialLoop, register_model


class Net(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1, padding=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2)
        self.conv2 = nn.Conv2d(in_channels=16, out_channels=32, kernel_size=5, stride=1, padding=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(in_features=7 * 7 * 32, out_features=128)
        self.fc2 = nn.Linear(in_features=128, out_features=num_classes)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        # The tutorial's x.view(-1, 7*7*32); flatten keeps the batch axis explicit for ONNX's dynamic batch.
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


@register_model(ModelSpec(
    name="lenet",
    dataset="mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    # The tutorial uses SGD(lr=learning_rate, momentum=momentum) without defining either: 0.01 / 0.9 here.
    # Its num_epochs is undefined too; 10 epochs is the zoo's choice.
    recipe=Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=10),
    source="seed 002: 3.1 数据加载 / 4.2 构建模型, Net",
    description="Conv5(1>16) > pool > Conv5(16>32) > pool > FC 1568-128-10",
    # seed 002 4.1: `trainloader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True)`; every batch
    # `print('Train Epoch: {} [{}/{} ({:.0f}%)]    Loss: {:.6f}'.format(..., loss.item()))`.
    tutorial_loop=TutorialLoop(shuffle=True, loss_item_every=1, print_every=1),
))
def lenet(num_classes: int = 10) -> nn.Module:
    return Net(num_classes)
