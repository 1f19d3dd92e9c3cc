"""The PyTorch quickstart MLP on FashionMNIST (seed 004, "创建模型": ``NeuralNetwork``)."""
from torch import nn

from zoo.registry import ModelSpec, Recipe, TutorialLoop, register_model


class NeuralNetwork(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


@register_model(ModelSpec(
    name="mlp",
    dataset="fashionmnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    # The quickstart: SGD(lr=1e-3), batch 64, 5 epochs, ToTensor only; it printed 65.0% test accuracy.
    recipe=Recipe(optimizer="sgd", lr=1e-3, batch_size=64, epochs=5),
    source="seed 004: PyTorch quickstart (加载数据 / 创建模型 / 优化参数), NeuralNetwork",
    description="Flatten > 784-512-512-10 MLP with ReLU",
    # seed 004: `train_dataloader = DataLoader(training_data, batch_size=batch_size)` (no shuffle); `if batch % 100
    # == 0: loss, current = loss.item(), (batch + 1) * len(X)` then `print(f"loss: {loss:>7f} ...")`.
    tutorial_loop=TutorialLoop(shuffle=False, loss_item_every=100, print_every=100),
))
def mlp(num_classes: int = 10) -> nn.Module:
    return NeuralNetwork(num_classes)
