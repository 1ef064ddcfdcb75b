"""How a version is evaluated and what the gate tolerates, as the training side imports it.

The ``fidelity:`` section of ``persona.yaml`` is validated when the card is read, so its model lives in
:mod:`store.fidelity_settings`.
"""

from store.fidelity_settings import FidelityError, FidelitySettings, GateThresholds

__all__ = ["FidelityError", "FidelitySettings", "GateThresholds"]
