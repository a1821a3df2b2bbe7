"""Settings sections for tests, with values fixed here so that no test changes when params.yaml does.
Each builder takes changes by key (``sections.dialogue(temperature=0)``) and checks the result as a
params.yaml section is checked."""

from sml import settings


def _builder(model, values: dict):
    def build(**changes):
        return model.model_validate({**values, **changes})
    return build


dialogue = _builder(settings.Dialogue, dict(gamma=0.7, train_turns=4, eval_turns=10, temperature=1.0, top_p=1.0,
                                            max_new_tokens=96, batch_size=64, shard_reveal="every_turn",
                                            block_leaks=True))
finetune = _builder(settings.Finetune, dict(lora_r=4, lora_alpha=8, lora_dropout=0.0, epochs=1.0, batch_size=4,
                                            lr=1e-3))
online = _builder(settings.OnlineSML, dict(init="base", n_tasks=8, steps=1, tasks_per_step=2, group_size=4, lr=1e-3,
                                           credit="conversation", beta=0.0, micro_batch=0))
generation = _builder(settings.Generation, dict(grpo="engine", vllm_mode="colocate", vllm_server_url="",
                                                vllm_gpu_memory=0.3, eval="local", eval_base_url="",
                                                eval_api_key_env="OPENAI_API_KEY"))
teacher = _builder(settings.Teacher, dict(kind="scripted", feedback="verdict,direction,step,tests", reveal_answer=False,
                                          restate=False,
                                          model="", base_url="", api_key_env="OPENAI_API_KEY", cache_dir=""))
classifier = _builder(settings.Classifier, dict(kind="rules", model="", base_url="", api_key_env="OPENAI_API_KEY",
                                                cache_dir=""))
