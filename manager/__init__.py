"""orch.manager"""
