"""wan_engine.load"""
