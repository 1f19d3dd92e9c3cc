"""One file per tutorial architecture; importing this package registers them all, in tutorial order."""
import importlib

for _name in ("mlp", "lenet", "cifar_cnn", "alexnet_mnist", "alexnet_transfer", "alexnet_finetune"):
    importlib.import_module(f"zoo.models.{_name}")
