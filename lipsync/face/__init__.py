"""Face analysis shared by every engine: offline dlib landmarks, tracking between
detections, One-Euro smoothing, and a per-template cache.

    from lipsync.face import analyze_template, load_landmark_models
    analysis = analyze_template(template_info, cache_dir=state / "faces")
"""

from lipsync.face.analysis import TemplateAnalysis, analyze_frames, analyze_template
from lipsync.face.landmarks import LandmarkModels, load_landmark_models, predictor_path

__all__ = ["TemplateAnalysis", "analyze_frames", "analyze_template", "LandmarkModels", "load_landmark_models",
           "predictor_path"]
