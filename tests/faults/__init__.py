"""The fault suite (see conftest.py). A package, so its conftest and modules never shadow tests/'s."""
