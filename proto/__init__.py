"""orch.proto"""
