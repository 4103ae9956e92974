"""orch.overlay"""
