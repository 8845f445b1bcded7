"""Test support shipped with dal: server launchers and the backend conformance suite.

A third-party backend runs the same contract by subclassing the suites in
:mod:`dal.testing.conformance` and providing a ``store`` fixture.
"""
