"""orch.cli"""
