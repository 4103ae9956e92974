"""orch.agent"""
