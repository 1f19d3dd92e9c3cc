"""The tutorials' numbers, written out by hand from the seed texts, against the registered specs.

Nothing here is derived from ``spec.recipe``: a recipe or a tutorial-loop field that drifts from its tutorial fails.
"""
from __future__ import annotations

import dataclasses

import pytest

import zoo
from zoo.registry import TutorialLoop

MNIST_96_RGB = dict(resize=(96, 96), channels=3, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))
TO_TENSOR_1 = dict(resize=None, channels=1, mean=(0.0,), std=(1.0,))

# model: (optimizer, lr, momentum, weight decay, batch, epochs, drop_last, transforms, tutorial loop fields)
LITERAL = {
    # seed 004: SGD(lr=1e-3), batch_size = 64, epochs = 5, ToTensor(), DataLoader without shuffle, loss every 100.
    "mlp": ("sgd", 1e-3, 0.0, 0.0, 64, 5, False, TO_TENSOR_1,
            dict(shuffle=False, drop_last=False, pin_memory=False, loss_item_every=100, acc_item_every=0,
                 print_every=100, tensorboard_every=0, default_optimizer=True)),
    # seed 002 4.1: SGD(lr=learning_rate, momentum=momentum) (undefined there: 0.01 / 0.9), batch_size = 64,
    # shuffle=True, a loss.item() progress print every batch; num_epochs undefined: 10.
    "lenet": ("sgd", 0.01, 0.9, 0.0, 64, 10, False, TO_TENSOR_1,
              dict(shuffle=True, drop_last=False, pin_memory=False, loss_item_every=1, acc_item_every=0,
                   print_every=1, tensorboard_every=0, default_optimizer=True)),
    # seed 003: SGD(lr=1e-2), DataLoader(train_set, 64, shuffle=True, drop_last=True), epoch = 10, ToTensor(),
    # add_scalar("train loss", loss.item()) every step, a loss line every 100 steps.
    "cifar_cnn": ("sgd", 1e-2, 0.0, 0.0, 64, 10, True, TO_TENSOR_1,
                  dict(shuffle=True, drop_last=True, pin_memory=False, loss_item_every=1, acc_item_every=0,
                       print_every=100, tensorboard_every=1, default_optimizer=True)),
    # seeds 000/001: AdamW(lr=0.0001) (default weight_decay 0.01), batch 512, 5 epochs, Resize 96 > Grayscale(3) >
    # ToTensor > Normalize(0.2, 0.3); loss.cpu().item() and acc.cpu().item() every batch, a print every 16.
    "alexnet_mnist": ("adamw", 1e-4, 0.0, 0.01, 512, 5, False, MNIST_96_RGB,
                      dict(shuffle=True, drop_last=False, pin_memory=False, loss_item_every=1, acc_item_every=1,
                           print_every=16, tensorboard_every=0, default_optimizer=True)),
    # seed 002 3.2 / 3.4: no recipe of their own; the article's SGD 0.01 / 0.9, batch 64, its loop; 5 epochs.
    "alexnet_transfer": ("sgd", 0.01, 0.9, 0.0, 64, 5, False, MNIST_96_RGB,
                         dict(shuffle=True, drop_last=False, pin_memory=False, loss_item_every=1, acc_item_every=0,
                              print_every=1, tensorboard_every=0, default_optimizer=True)),
    "alexnet_finetune": ("sgd", 0.01, 0.9, 0.0, 64, 5, False, MNIST_96_RGB,
                         dict(shuffle=True, drop_last=False, pin_memory=False, loss_item_every=1, acc_item_every=0,
                              print_every=1, tensorboard_every=0, default_optimizer=True)),
}


def test_every_model_has_a_literal_row():
    assert sorted(LITERAL) == sorted(zoo.list_models())


@pytest.mark.parametrize("name", list(LITERAL))
def test_recipe_matches_the_tutorial(name):
    optimizer, lr, momentum, weight_decay, batch, epochs, drop_last, transforms, _ = LITERAL[name]
    r = zoo.get_spec(name).recipe
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.batch_size, r.epochs, r.drop_last) == \
        (optimizer, lr, momentum, weight_decay, batch, epochs, drop_last)
    t = r.transforms
    assert dict(resize=t.resize and tuple(t.resize), channels=t.channels, mean=tuple(t.mean), std=tuple(t.std)) == \
        transforms


@pytest.mark.parametrize("name", list(LITERAL))
def test_tutorial_loop_matches_the_tutorial(name):
    loop = zoo.get_spec(name).tutorial_loop
    assert isinstance(loop, TutorialLoop)
    assert dataclasses.asdict(loop) == LITERAL[name][8]
    # The recipe's drop_last is the one the tutorial's DataLoader uses.
    assert loop.drop_last == zoo.get_spec(name).recipe.drop_last


def test_tutorial_loop_is_frozen_and_exported():
    with pytest.raises(dataclasses.FrozenInstanceError):
        zoo.get_spec("mlp").tutorial_loop.shuffle = True  # type: ignore[misc]
    assert zoo.TutorialLoop is TutorialLoop
