"""wan_engine.store"""
