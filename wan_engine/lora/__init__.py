"""wan_engine.lora"""
