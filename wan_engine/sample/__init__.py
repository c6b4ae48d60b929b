"""wan_engine.sample"""
