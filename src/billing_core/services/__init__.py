"""Use cases: each public function/method is one thing a caller can ask of the system."""
