"""Training: callbacks, identity mining, frozen backbones, loss scaling, validation splits."""
