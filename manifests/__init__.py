"""orch.manifests"""
