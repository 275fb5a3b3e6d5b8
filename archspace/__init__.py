"""archspace: vision-network design as data.

A network is a YAML spec; archspace validates it, checks its graph, counts its cost
analytically and compiles it into a PyTorch module::

    from archspace import load_spec, complexity, compile_network
    spec = load_spec("coatnet-0", overrides=["stages[2].depth=6"])
    print(complexity(spec)["params"])
    model = compile_network(spec)

or, the way timm is used::

    import archspace
    archspace.list_models("convnext-*")
    model = archspace.create_model("convnext-t", num_classes=10, weights="convnext_tiny.safetensors")
"""

from ._factory import create_model, list_models
from ._lazy import lazy
from .complexity import complexity
from .errors import Problem, SpecError
from .graph import Lowered, lower
from .spec import NetworkSpec, load_spec

# what needs torch is imported on first use: specs, checks and analytic cost run without it
__getattr__, __dir__ = lazy(__name__, globals(), {
    "FeatureNetwork": ".compile:FeatureNetwork", "Network": ".compile:Network",
    "compile_network": ".compile:compile_network", "weights": ".weights"})

__version__ = "0.1.0"

__all__ = [
    "FeatureNetwork", "Lowered", "Network", "NetworkSpec", "Problem", "SpecError", "compile_network",
    "complexity", "create_model", "list_models", "load_spec", "lower", "weights",
]
