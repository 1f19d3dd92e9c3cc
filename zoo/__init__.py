"""The tutorial model zoo: ``list_models()``, ``get_model(name)``, ``get_spec(name)``.

Models register on first lookup, through the entry points of zoo.plugins (the zoo's own six among them).
"""
from zoo.registry import (
    ModelSpec,
    Recipe,
    Transforms,
    TutorialLoop,
    count_parameters,
    get_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "Recipe", "Transforms", "TutorialLoop", "count_parameters", "get_model", "get_spec", "list_models",
           "register_model"]
__version__ = "0.1.0"
