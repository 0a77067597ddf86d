"""CourseGPT-zh (arXiv 2405.04781): QA corpus distillation, LLM-as-judge prompt optimization, LoRA SFT."""
