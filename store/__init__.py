"""The persona store: how a persona lives on disk.

Both the serving side (``service``) and the training side (``training``) read personas through this
package, and neither imports the other. It knows the folder layout, the card (``persona.yaml``), the
adapter versions with their metadata, the live-version pointer and the base model.
"""
