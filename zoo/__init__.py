"""The tutorial model zoo: ``list_models()``, ``get_model(name)``, ``get_spec(name)``."""
from zoo import models as _models  # noqa: F401  (registers every model)
from zoo.registry import (
    ModelSpec,
    Recipe,
    Transforms,
    TutorialLoop,
    count_parameters,
    get_model,
    get_spec,
    list_models,
)

__all__ = ["ModelSpec", "Recipe", "Transforms", "TutorialLoop", "count_parameters", "get_model", "get_spec", "list_models"]
__version__ = "0.1.0"
