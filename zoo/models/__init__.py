"""One file per tutorial architecture; importing this package (the zoo's entry point, see zoo.plugins) registers
them all, in tutorial order, and the ``torchvision:NAME`` resolver."""
import importlib

for _name in ("mlp", "lenet", "cifar_cnn", "alexnet_mnist", "alexnet_transfer", "alexnet_finetune", "torchvision_models"):
    importlib.import_module(f"zoo.models.{_name}")
