"""Training on non-ideal crossbars (TxSim): forward, backward and update through the crossbar."""

from .analog import AnalogLayer, analog_layers, to_analog
from .trainer import CrossbarTrainResult, train_on_crossbar
from .update import UpdateModel

__all__ = ["AnalogLayer", "CrossbarTrainResult", "UpdateModel", "analog_layers", "to_analog", "train_on_crossbar"]
