"""What the classification labels mean: part of the knowledge base (docs/medsynth.md §2).

A real pre-trained LLM knows that "签署知情同意书" is about informed consent and that "吃什么药"
asks for a treatment; a base model pre-trained on MedSynth-8's corpus only knows what the
corpus says. These glossaries state, as textbook prose, what each CHIP-CTC criterion category
and each KUAKE-QIC search intent is about, in words of the kind the criteria and queries use
(moelora.data.medsynth.corpus turns them into corpus lines). They name no task format and contain
no task sample: the tasks still have to learn the prompt, the option list and the
``非上述类型`` rule from their training data.
"""

from __future__ import annotations

# CHIP-CTC category → what its criteria are about (a few key phrases each).
CTC_CONCEPTS: dict[str, tuple[str, ...]] = {
    "疾病": ("患有某种疾病", "合并严重疾病", "既往病史"),
    "诊断": ("确诊为某病", "符合诊断标准", "临床诊断"),
    "症状(患者感受)": ("患者自己感到的症状", "主诉不适", "出现某种症状"),
    "体征(医生检测）": ("医生测得的血压", "体温", "心率"),
    "药物": ("使用过某种药", "正在服用的药物", "长期用药"),
    "实验室检查": ("化验结果异常", "检查值超过正常上限"),
    "过敏耐受": ("对药物过敏", "不能耐受某种成分"),
    "治疗或手术": ("接受过的手术", "放疗或化疗", "计划进行的治疗"),
    "年龄": ("受试者的年龄范围", "多少周岁"),
    "性别": ("男性", "女性", "性别要求"),
    "怀孕相关": ("妊娠期", "哺乳期", "计划怀孕", "避孕措施"),
    "知情同意": ("自愿参加研究", "签署知情同意书", "家属签字同意"),
    "吸烟状况": ("是否吸烟", "每天吸烟的支数"),
    "酒精使用": ("饮酒", "酗酒史"),
    "参与其它试验": ("近期参加过其他临床试验", "正在参加别的药物试验"),
    "预期寿命": ("预计生存期", "预期还能活多久"),
    "能力": ("能否配合完成问卷", "认知障碍", "理解研究内容"),
    "依存性": ("依从性", "能否按时随访"),
    "研究者决定": ("研究者认为不适合", "研究者判断不宜入组"),
    "疾病分期": ("疾病处于急性发作期", "疾病分期"),
}

# KUAKE-QIC intent → what such a search asks.
QIC_CONCEPTS: dict[str, tuple[str, ...]] = {
    "病情诊断": ("自己得的是什么病", "是不是某种病"),
    "病因分析": ("为什么会这样", "是什么原因引起的", "是怎么回事"),
    "治疗方案": ("怎么治疗", "吃什么药好", "该怎么办"),
    "就医建议": ("该挂什么科", "去哪个医院看", "需不需要去医院"),
    "指标解读": ("检查结果说明什么", "报告怎么看", "正常值是多少"),
    "后果表述": ("会有什么后果", "严不严重", "不治疗会怎么样"),
    "注意事项": ("饮食要注意什么", "能不能吃某种东西", "平时要注意什么"),
    "功效作用": ("某种药有什么作用", "药的功效", "药能不能治某病"),
}
