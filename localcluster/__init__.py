"""orch.localcluster"""
