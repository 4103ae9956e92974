"""orch.runtime"""
